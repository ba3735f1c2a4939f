-- mart: customers
-- primary key: customer_id
-- incremental: customer_id from silver.customers.id, gold.orders.customer_id
-- One row per existing customer: number_of_orders and first/most recent order_date over its orders whose status
-- is not cancelled; lifetime_value = existing payments of its orders neither cancelled nor returned.
WITH order_stats AS (
    SELECT
        customer_id,
        min(order_date) FILTER (WHERE status IS DISTINCT FROM 'cancelled') AS first_order_date,
        max(order_date) FILTER (WHERE status IS DISTINCT FROM 'cancelled') AS most_recent_order_date,
        count(*) FILTER (WHERE status IS DISTINCT FROM 'cancelled') AS number_of_orders,
        -- gold.orders.amount is the sum of the order's existing payments (0 when none).
        sum(amount) FILTER (
            WHERE status IS DISTINCT FROM 'cancelled' AND status IS DISTINCT FROM 'returned'
        ) AS lifetime_value
    FROM gold.orders
    GROUP BY customer_id
)
SELECT
    c.id AS customer_id,
    c.first_name,
    c.last_name,
    c.email,
    c.segment,
    s.first_order_date,
    s.most_recent_order_date,
    CAST(coalesce(s.number_of_orders, 0) AS BIGINT) AS number_of_orders,
    CAST(coalesce(s.lifetime_value, 0) AS DECIMAL(38, 2)) AS lifetime_value
FROM silver.customers AS c
LEFT JOIN order_stats AS s ON s.customer_id = c.id
