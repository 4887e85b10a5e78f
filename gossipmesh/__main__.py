from gossipmesh.cli.app import main

main()
