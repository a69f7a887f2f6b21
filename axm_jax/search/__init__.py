"""Person search with a trained run on your own images: `python -m axm_jax.search index | query | serve`.

Modules, one job each: `images` finds and reads image files, `store` keeps the index on disk (memory-mapped
shards and a manifest), `embed` loads a run's model and embeds images and queries with the evaluation's own
preprocessing and encoders, `topk` ranks a gallery exactly in chunks over the local devices, `indexer` builds and
updates an index, `searcher` answers queries, `picture` draws a contact sheet, `server` is the web page.
"""
