"""ftc.cli: the composition root (argparse, the one catch point, the supervisor, `ftc data`,
merge and generate). The only package that imports the others; nothing imports it."""
