/* The one mark a symbol needs to be seen outside its module: every build compiles with
 * -fvisibility=hidden, so a chronicle .so exports its luaopen_* function and nothing else. */
#ifndef CHRONICLE_EXPORT_H
#define CHRONICLE_EXPORT_H

#define CHRONICLE_EXPORT __attribute__((visibility("default")))

#endif
