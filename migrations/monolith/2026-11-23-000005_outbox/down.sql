DROP INDEX orders.orders_pending;
DROP TABLE orders.outbox;
