"""Filters: turbopuffer's filter grammar parsed into a typed tree and evaluated over Arrow tables,
and the per-attribute filter indexes of segments.

- ``parse``: ``parse_filter`` (JSON + schema -> ``Filter``), every input error an ``InvalidRequest``;
- ``tree``: the ``Filter`` nodes and ``Filter.evaluate(table)``;
- ``kernels``: the Arrow/numpy kernels conditions evaluate with; ``glob``: glob -> RE2;
- ``ops``: operator names, negations, limits; ``filterindex``: sorted-value indexes of segments.
"""
