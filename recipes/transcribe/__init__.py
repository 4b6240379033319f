"""Transcripts of one's own audio with the streaming engine: files, folders or manifests in, JSONL and captions out."""
