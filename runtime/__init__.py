"""ftc runtime: what runs and supervises training, and the helpers emitted scripts import."""
