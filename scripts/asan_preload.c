/* Preloaded after the ASan runtime into lua5.4 by `make check` (see scripts/asan-lua.sh).
 * 1. Drops LD_PRELOAD from the environment once the runtime is in, so that the shell tools a
 *    spec starts (sh, find, tar, ...) do not run under LeakSanitizer and fail on their own leaks.
 *    A lua5.4 that a spec starts goes through the wrapper again and is checked like the first.
 * 2. Makes dlclose a no-op: Lua unloads chronicle.core when its state closes, before LSan's
 *    check at exit, and a leak report could then not name chronicle's functions. */
#include <dlfcn.h>
#include <stdlib.h>

__attribute__((constructor)) static void preload_drop_env(void)
{
    unsetenv("LD_PRELOAD");
}

int dlclose(void *handle)
{
    (void)handle;
    return 0;
}
