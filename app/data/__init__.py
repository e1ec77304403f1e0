"""Dataset import: file reading, layout detection, canonical rows."""
