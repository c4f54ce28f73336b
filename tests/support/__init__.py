"""Helpers the tests share: stand-in servers and models, fake workers, spool and media kits."""
