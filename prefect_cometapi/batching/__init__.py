"""The engine behind ``batch_generate`` and the chunk flow: items and templates (:mod:`.sources`),
the sliding window (:mod:`.window`), one item's steps (:mod:`.item`, :mod:`.requesting`,
:mod:`.delivery`), the delivery ledger (:mod:`.ledger`), chunking (:mod:`.chunks`) and memory
tuning (:mod:`.memory`)."""
