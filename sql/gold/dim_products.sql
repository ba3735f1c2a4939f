-- mart: dim_products
-- primary key: product_id
-- incremental: product_id from silver.products.id
-- Current state of every existing product (SCD type 1), description included.
SELECT
    id AS product_id,
    sku,
    name,
    category,
    CAST(price AS DECIMAL(12, 2)) AS price,
    active,
    description
FROM silver.products
