"""Labelled video data: label maps and annotation readers (`labels`, `annotations`), the frame
cache (`cache`) and torch datasets over it or over raw videos (`datasets`)."""
