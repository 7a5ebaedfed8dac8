// distributed/launch.h: sd-qzo's own launcher for the ranks of one host (`train --gpus N`,
// `--processes N`): it starts N copies of this very program (/proc/self/exe, the
// same arguments) with the variables other launchers set (RANK, WORLD_SIZE,
// LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1, MASTER_PORT, and
// SQ_DIST_LAUNCHED=1 so that it does not launch again). Rank 0 inherits the listening socket the others
// connect to (SQ_DIST_LISTEN_FD): the port is never free for another program to take.
// The launcher computes nothing and writes no file. It forwards each SIGINT and
// SIGTERM to every rank (the ranks sit in their own process groups, so a Ctrl-C
// from the terminal reaches each once, through here: the first stops them after a
// step and rank 0 saves, a second stops them at once), and waits: when a rank fails, the others
// stop on their own (distributed/exchange.h names the rank); those still running `grace_s`
// later get SIGTERM, and SIGKILL 10 s after that. Each rank gets SIGTERM if the
// launcher itself dies.
#ifndef SQ_DIST_LAUNCH_H
#define SQ_DIST_LAUNCH_H

// argv: the command's arguments as main() passed them on (argv[0] = "train"); the
// ranks run `/proc/self/exe train ...` with argv[0] "sd-qzo". SQ_OK when every rank exited 0;
// otherwise SQ_FAIL with a message naming the rank that failed first and how.
int sq_dist_launch_local(int count, int argc, char **argv, double grace_s);

#endif
