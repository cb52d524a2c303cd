-- The reservations table holds only requests in flight (tens to a few thousand rows), so
-- lease renewal (by owner) and expiry (by expires_ms) scan it whole; its two secondary
-- indexes cost four page writes on every reserve and settle and saved nothing measurable.
DROP INDEX reservations_expires;
DROP INDEX reservations_owner;
