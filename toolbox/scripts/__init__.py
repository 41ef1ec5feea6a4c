"""The code behind bin/ scripts: argparse, a call into lib/, printed results."""
