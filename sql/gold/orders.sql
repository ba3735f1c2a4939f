-- mart: orders
-- primary key: order_id
-- incremental: order_id from silver.orders.id, silver.payments.order_id
-- One row per existing order: its payments summed per method and in total over the order's existing
-- payments (0 when it has none of that method / none at all).
WITH payment_totals AS (
    SELECT
        order_id,
        sum(amount) FILTER (WHERE method = 'credit_card') AS credit_card_amount,
        sum(amount) FILTER (WHERE method = 'coupon') AS coupon_amount,
        sum(amount) FILTER (WHERE method = 'bank_transfer') AS bank_transfer_amount,
        sum(amount) FILTER (WHERE method = 'gift_card') AS gift_card_amount,
        sum(amount) AS amount
    FROM silver.payments
    GROUP BY order_id
)
SELECT
    o.id AS order_id,
    o.customer_id,
    o.order_date,
    o.status,
    CAST(coalesce(p.credit_card_amount, 0) AS DECIMAL(38, 2)) AS credit_card_amount,
    CAST(coalesce(p.coupon_amount, 0) AS DECIMAL(38, 2)) AS coupon_amount,
    CAST(coalesce(p.bank_transfer_amount, 0) AS DECIMAL(38, 2)) AS bank_transfer_amount,
    CAST(coalesce(p.gift_card_amount, 0) AS DECIMAL(38, 2)) AS gift_card_amount,
    CAST(coalesce(p.amount, 0) AS DECIMAL(38, 2)) AS amount
FROM silver.orders AS o
LEFT JOIN payment_totals AS p ON p.order_id = o.id
