-- The shop source database (docs/source.md) that Debezium captures in docker-compose.yml.
-- Every table has a primary key and REPLICA IDENTITY DEFAULT: on updates `before` is null, on deletes it holds
-- only the key. Loaded by the source-postgres container on its first start (docker-entrypoint-initdb.d).

CREATE TABLE public.customers (
    id integer PRIMARY KEY,
    email text NOT NULL,
    first_name text,
    last_name text,
    segment text CHECK (segment IN ('consumer', 'corporate', 'home_office')),
    country text,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public.products (
    id integer PRIMARY KEY,
    sku text NOT NULL,
    name text NOT NULL,
    category text,
    price numeric(10, 2) NOT NULL,
    active boolean NOT NULL DEFAULT true,
    description text
);

CREATE TABLE public.orders (
    id bigint PRIMARY KEY,
    customer_id integer NOT NULL,
    status text NOT NULL CHECK (status IN ('placed', 'shipped', 'completed', 'returned', 'cancelled')),
    order_date date NOT NULL,
    created_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);

CREATE TABLE public.order_items (
    id bigint PRIMARY KEY,
    order_id bigint NOT NULL,
    product_id integer NOT NULL,
    quantity integer NOT NULL,
    unit_price numeric(10, 2) NOT NULL
);

CREATE TABLE public.payments (
    id bigint PRIMARY KEY,
    order_id bigint NOT NULL,
    method text NOT NULL CHECK (method IN ('credit_card', 'coupon', 'bank_transfer', 'gift_card')),
    amount numeric(10, 2) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Debezium's signalling table (the connector's signal.data.collection): an INSERT of an execute-snapshot
-- signal re-reads tables while streaming goes on (docs/operations.md, "Schema changes (DDL)").
CREATE TABLE public.debezium_signal (
    id varchar(42) PRIMARY KEY,
    type varchar(32) NOT NULL,
    data varchar(2048)
);

ALTER TABLE public.customers REPLICA IDENTITY DEFAULT;
ALTER TABLE public.products REPLICA IDENTITY DEFAULT;
ALTER TABLE public.orders REPLICA IDENTITY DEFAULT;
ALTER TABLE public.order_items REPLICA IDENTITY DEFAULT;
ALTER TABLE public.payments REPLICA IDENTITY DEFAULT;

INSERT INTO public.customers (id, email, first_name, last_name, segment, country, created_at) VALUES
    (1, 'ada@example.com', 'Ada', 'Lovelace', 'consumer', 'GB', '2026-01-05 09:00:00+00'),
    (2, 'grace@example.com', 'Grace', 'Hopper', 'corporate', 'US', '2026-01-06 10:30:00+00'),
    (3, 'alan@example.com', 'Alan', 'Turing', 'home_office', 'GB', '2026-01-07 14:15:00+00');

INSERT INTO public.products (id, sku, name, category, price, active, description) VALUES
    (1, 'SKU-0001', 'Mechanical keyboard', 'electronics', 89.90, true, 'Tenkeyless, brown switches.'),
    (2, 'SKU-0002', 'Desk lamp', 'home', 24.50, true, 'LED, three colour temperatures.'),
    (3, 'SKU-0003', 'Notebook', 'stationery', 3.99, true, 'A5, dotted, 120 pages.');

INSERT INTO public.orders (id, customer_id, status, order_date, created_at) VALUES
    (1, 1, 'completed', '2026-02-01', '2026-02-01 08:12:00'),
    (2, 2, 'shipped', '2026-02-01', '2026-02-01 11:40:00'),
    (3, 3, 'placed', '2026-02-02', '2026-02-02 16:05:00'),
    (4, 1, 'cancelled', '2026-02-02', '2026-02-02 17:30:00');

INSERT INTO public.order_items (id, order_id, product_id, quantity, unit_price) VALUES
    (1, 1, 1, 1, 89.90),
    (2, 1, 3, 4, 3.99),
    (3, 2, 2, 2, 24.50),
    (4, 3, 3, 10, 3.99),
    (5, 4, 1, 1, 89.90);

INSERT INTO public.payments (id, order_id, method, amount, created_at) VALUES
    (1, 1, 'credit_card', 95.86, '2026-02-01 08:13:00+00'),
    (2, 1, 'coupon', 10.00, '2026-02-01 08:13:00+00'),
    (3, 2, 'bank_transfer', 49.00, '2026-02-01 11:45:00+00'),
    (4, 3, 'gift_card', 39.90, '2026-02-02 16:06:00+00');
