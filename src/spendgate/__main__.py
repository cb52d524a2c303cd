from spendgate.cli.main import main

main()
