"""The turbopuffer v2 wire requests, parsed and validated against a namespace schema into typed
requests: ``query`` (query and multi-query bodies) and ``write`` (write bodies). Pure: values in,
values out; every problem is an ``InvalidRequest`` naming the field."""
