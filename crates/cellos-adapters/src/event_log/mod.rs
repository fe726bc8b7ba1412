//! Durable JSONL event log: the default EventSink.
