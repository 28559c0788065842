"""`python -m lift_mlx`: the `lift-mlx` command (what `mlx.launch -- python -m lift_mlx ...`
starts on each rank)."""

from lift_mlx.cli import main

if __name__ == "__main__":
    main()
