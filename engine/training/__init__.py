"""Student training: loading (hub id, local folder, tiny built-from-config), SFT, generation."""
