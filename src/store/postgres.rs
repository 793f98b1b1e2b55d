//! The PostgreSQL backend: one database shared by several synthd processes.
