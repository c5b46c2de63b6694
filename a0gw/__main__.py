from a0gw.cli import main

main()
