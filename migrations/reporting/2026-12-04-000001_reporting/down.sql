DROP SCHEMA reporting_v1, reporting_agg, raw_wishlist, raw_orders, raw_customers, raw_catalog CASCADE;
