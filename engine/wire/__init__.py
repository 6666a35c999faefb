"""Pure wire formats: profiles, platform builders, signing, redaction. No I/O."""
