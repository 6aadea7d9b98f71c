"""Data: the Recording type, the on-disk store, sources (loaders and simulators)."""

from neurocast.data.connectome import Connectome
from neurocast.data.recording import Recording
from neurocast.data.sources import load_recordings, register_source, sources
from neurocast.data.store import RecordingWriter, is_store, open_recording, write_recording

__all__ = [
    "Connectome",
    "Recording",
    "RecordingWriter",
    "is_store",
    "load_recordings",
    "open_recording",
    "register_source",
    "sources",
    "write_recording",
]
