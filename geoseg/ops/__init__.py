"""What users call: predict a scene, polygonise a mask, district areas, SQL over a run (io + core + ml on a Runner)."""
