-- mart: dim_date
-- primary key: date_key
-- One row per calendar date from the earliest to the latest order_date in silver.orders (none when there are
-- no orders); date_key is yyyymmdd, iso_day_of_week 1 = Monday .. 7 = Sunday, is_weekend on Saturday/Sunday.
WITH bounds AS (
    SELECT min(order_date) AS first_date, max(order_date) AS last_date
    FROM silver.orders
),
dates AS (
    SELECT CAST(d AS DATE) AS date
    FROM bounds, generate_series(bounds.first_date, bounds.last_date, INTERVAL 1 DAY) AS g(d)
)
SELECT
    CAST(year(date) * 10000 + month(date) * 100 + day(date) AS INTEGER) AS date_key,
    date,
    CAST(year(date) AS INTEGER) AS year,
    CAST(quarter(date) AS INTEGER) AS quarter,
    CAST(month(date) AS INTEGER) AS month,
    CAST(day(date) AS INTEGER) AS day,
    CAST(isodow(date) AS INTEGER) AS iso_day_of_week,
    isodow(date) IN (6, 7) AS is_weekend
FROM dates
