from minisparse.cli import main

main()
