-- Demo passwords for the roles of roles.sql, used by docker-compose.yml only: never outside a demo.
-- Elsewhere set them from the environment: cdcwh postgres init-roles --password-env sink=VARIABLE ...
ALTER ROLE cdcwh_owner PASSWORD 'cdcwh_owner';
ALTER ROLE cdcwh_sink PASSWORD 'cdcwh_sink';
ALTER ROLE cdcwh_audit PASSWORD 'cdcwh_audit';
ALTER ROLE cdcwh_reader PASSWORD 'cdcwh_reader';
