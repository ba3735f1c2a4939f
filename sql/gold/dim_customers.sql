-- mart: dim_customers
-- primary key: customer_id, version
-- incremental: customer_id from silver.customers.id
-- SCD type 2 over (email, segment, country): one row per version of a customer, valid_from the source commit
-- time of the change that started it, valid_to that of the change that ended it (next version or delete).
WITH changes AS (
    SELECT
        id AS customer_id,
        __op AS op,
        email,
        segment,
        country,
        __source_ts AS source_ts,
        __seq AS seq,
        lag(__op) OVER w AS previous_op,
        lag(email) OVER w AS previous_email,
        lag(segment) OVER w AS previous_segment,
        lag(country) OVER w AS previous_country
    FROM silver_history.customers
    WINDOW w AS (PARTITION BY id ORDER BY __seq)
),
flagged AS (
    -- A change starts a version when it is not a delete and either there is no current version (the customer's
    -- first change, or the first after a delete) or its (email, segment, country) is distinct from the previous
    -- image's, which always carries the current version's values. Other column changes start nothing.
    SELECT
        *,
        op <> 'd' AND (
            previous_op IS NULL
            OR previous_op = 'd'
            OR email IS DISTINCT FROM previous_email
            OR segment IS DISTINCT FROM previous_segment
            OR country IS DISTINCT FROM previous_country
        ) AS starts_version
    FROM changes
),
boundaries AS (
    -- Version starts and deletes; a version ends at the customer's next boundary (a new version or a delete).
    SELECT
        *,
        lead(source_ts) OVER w AS next_source_ts,
        lead(seq) OVER w AS next_seq
    FROM flagged
    WHERE starts_version OR op = 'd'
    WINDOW w AS (PARTITION BY customer_id ORDER BY seq)
)
SELECT
    customer_id,
    CAST(row_number() OVER (PARTITION BY customer_id ORDER BY seq) AS BIGINT) AS version,
    email,
    segment,
    country,
    source_ts AS valid_from,
    next_source_ts AS valid_to,
    next_seq IS NULL AS is_current
FROM boundaries
WHERE starts_version
