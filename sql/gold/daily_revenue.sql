-- mart: daily_revenue
-- primary key: order_date
-- incremental: order_date from silver.orders.order_date, gold.fact_order_items.order_date
-- One row per order_date that has at least one qualifying order (status placed, shipped or completed):
-- orders = count of qualifying orders, items_sold / revenue = quantity / quantity*unit_price of their items.
WITH qualifying_orders AS (
    SELECT id AS order_id, order_date
    FROM silver.orders
    WHERE status IN ('placed', 'shipped', 'completed') AND order_date IS NOT NULL
),
order_lines AS (
    -- gold.fact_order_items holds exactly the existing items whose order exists.
    SELECT order_id, sum(quantity) AS items_sold, sum(line_amount) AS revenue
    FROM gold.fact_order_items
    GROUP BY order_id
)
SELECT
    q.order_date,
    CAST(count(*) AS BIGINT) AS orders,
    CAST(coalesce(sum(l.items_sold), 0) AS BIGINT) AS items_sold,
    CAST(coalesce(sum(l.revenue), 0) AS DECIMAL(38, 2)) AS revenue
FROM qualifying_orders AS q
LEFT JOIN order_lines AS l ON l.order_id = q.order_id
GROUP BY q.order_date
