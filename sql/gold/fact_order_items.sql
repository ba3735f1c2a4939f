-- mart: fact_order_items
-- primary key: order_item_id
-- incremental: order_id from silver.order_items.order_id, silver.orders.id
-- One row per existing order item whose order exists, with the order's customer_id, order_date and status;
-- line_amount = quantity * unit_price.
SELECT
    i.id AS order_item_id,
    i.order_id,
    o.customer_id,
    i.product_id,
    o.order_date,
    o.status,
    i.quantity,
    CAST(i.unit_price AS DECIMAL(12, 2)) AS unit_price,
    CAST(i.quantity * i.unit_price AS DECIMAL(38, 2)) AS line_amount
FROM silver.order_items AS i
INNER JOIN silver.orders AS o ON o.id = i.order_id
