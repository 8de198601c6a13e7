"""Evaluation: benchmark readers (shapes, GEdit-Bench, ImgEdit-Bench), judge scoring, tables."""
