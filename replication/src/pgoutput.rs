//! pgoutput logical replication messages (being written).
