"""The operation log (操作日志): who changed what, when, from where; append-only."""
