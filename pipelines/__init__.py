"""newsbeam: news articles to clean, deduplicated, language-tagged, entity-annotated Avro."""

__version__ = "0.1.0"
