-- PostgreSQL DDL of the gold marts (docs/gold.md). Idempotent: safe to run on every start.
-- Columns match sql/gold/<mart>.sql in name, order and type, plus the _version / _updated_at the runner adds.
-- Money is exact end to end: a row's amount numeric(12,2), a sum of amounts numeric(38,2).

CREATE SCHEMA IF NOT EXISTS marts;

CREATE TABLE IF NOT EXISTS marts.orders (
    order_id bigint NOT NULL,
    customer_id integer,
    order_date date,
    status text,
    credit_card_amount numeric(38, 2) NOT NULL,
    coupon_amount numeric(38, 2) NOT NULL,
    bank_transfer_amount numeric(38, 2) NOT NULL,
    gift_card_amount numeric(38, 2) NOT NULL,
    amount numeric(38, 2) NOT NULL,
    _version bigint NOT NULL,
    _updated_at timestamptz NOT NULL,
    PRIMARY KEY (order_id)
);

CREATE TABLE IF NOT EXISTS marts.customers (
    customer_id integer NOT NULL,
    first_name text,
    last_name text,
    email text,
    segment text,
    first_order_date date,
    most_recent_order_date date,
    number_of_orders bigint NOT NULL,
    lifetime_value numeric(38, 2) NOT NULL,
    _version bigint NOT NULL,
    _updated_at timestamptz NOT NULL,
    PRIMARY KEY (customer_id)
);

CREATE TABLE IF NOT EXISTS marts.daily_revenue (
    order_date date NOT NULL,
    orders bigint NOT NULL,
    items_sold bigint NOT NULL,
    revenue numeric(38, 2) NOT NULL,
    _version bigint NOT NULL,
    _updated_at timestamptz NOT NULL,
    PRIMARY KEY (order_date)
);

CREATE TABLE IF NOT EXISTS marts.fact_order_items (
    order_item_id bigint NOT NULL,
    order_id bigint,
    customer_id integer,
    product_id integer,
    order_date date,
    status text,
    quantity integer,
    unit_price numeric(12, 2),
    line_amount numeric(38, 2),
    _version bigint NOT NULL,
    _updated_at timestamptz NOT NULL,
    PRIMARY KEY (order_item_id)
);

CREATE TABLE IF NOT EXISTS marts.dim_products (
    product_id integer NOT NULL,
    sku text,
    name text,
    category text,
    price numeric(12, 2),
    active boolean,
    description text,
    _version bigint NOT NULL,
    _updated_at timestamptz NOT NULL,
    PRIMARY KEY (product_id)
);

CREATE TABLE IF NOT EXISTS marts.dim_customers (
    customer_id integer NOT NULL,
    version bigint NOT NULL,
    email text,
    segment text,
    country text,
    valid_from timestamptz,
    valid_to timestamptz,
    is_current boolean NOT NULL,
    _version bigint NOT NULL,
    _updated_at timestamptz NOT NULL,
    PRIMARY KEY (customer_id, version)
);

CREATE TABLE IF NOT EXISTS marts.dim_date (
    date_key integer NOT NULL,
    date date NOT NULL,
    year integer NOT NULL,
    quarter integer NOT NULL,
    month integer NOT NULL,
    day integer NOT NULL,
    iso_day_of_week integer NOT NULL,
    is_weekend boolean NOT NULL,
    _version bigint NOT NULL,
    _updated_at timestamptz NOT NULL,
    PRIMARY KEY (date_key)
);
