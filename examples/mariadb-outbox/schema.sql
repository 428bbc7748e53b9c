-- The two tables of the example (MariaDB 10.6 or later, MySQL 8.0 or later).
CREATE TABLE IF NOT EXISTS shop_orders (
  id varchar(64) PRIMARY KEY,
  customer varchar(64) NOT NULL,
  total_cents bigint NOT NULL,
  doc JSON
);
CREATE TABLE IF NOT EXISTS shop_outbox (
  id bigint AUTO_INCREMENT PRIMARY KEY,
  payload JSON NOT NULL
);
