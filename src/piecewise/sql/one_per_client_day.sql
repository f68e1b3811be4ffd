-- One test per client IP, date and direction, as M-Lab's statistics pipeline keeps
-- heavy testers from skewing results. The pick is pseudo-random but deterministic:
-- the lowest hash of the test id. Tests without a client IP are all kept.
SELECT *
FROM tests
QUALIFY client_ip IS NULL
    OR row_number() OVER (
        PARTITION BY direction, "date", client_ip
        ORDER BY hash(id), id
    ) = 1
