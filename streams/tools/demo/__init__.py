"""``visrec demo``: the whole pipeline on real photos, with scripted shoppers and a report."""
