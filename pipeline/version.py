"""The chatshards version: the one place it is written (``setup.py`` reads it from here, the manifest's
``versions.chatshards`` records it)."""

VERSION = "0.1.0"
