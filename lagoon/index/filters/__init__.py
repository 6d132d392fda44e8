"""Filters: turbopuffer's filter grammar parsed into a typed tree, evaluated over Arrow tables, and
the per-attribute filter indexes of segments."""
