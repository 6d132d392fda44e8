"""Query execution over a snapshot's ``DocSource``: ranking, paging, rows, aggregations and the
explain plan. Pure: the engine builds the snapshot and hands it in; requests come parsed from
``lagoon.wire``."""
