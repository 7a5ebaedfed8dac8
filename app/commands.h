// app/commands.h: one entry point per sub-command. argv[0] is the command name.
// Each returns SQ_OK or SQ_FAIL with the message set (main prints it).
#ifndef SQ_COMMANDS_H
#define SQ_COMMANDS_H


int sq_cmd_info(int argc, char **argv);
int sq_cmd_quantize(int argc, char **argv);
int sq_cmd_bench(int argc, char **argv);
int sq_cmd_sample(int argc, char **argv);
int sq_cmd_train(int argc, char **argv);
int sq_cmd_export(int argc, char **argv);

#endif
