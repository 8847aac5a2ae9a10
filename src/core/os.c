/* os.c — folder creation (os.h). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"
#include "os.h"

int os_mkdir_p(const char *path) {
    char buf[PATH_MAX];
    if (!path[0]) return err_set("an empty folder name");
    if ((size_t)snprintf(buf, sizeof buf, "%s", path) >= sizeof buf) return err_set("%s: path too long", path);
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != 0) continue;
        char saved = *p;
        *p = 0;
        struct stat st;
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return err_set("cannot create the folder %s: %s", buf, strerror(errno));
        if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
            return err_set("cannot create the folder %s: a file of that name is in the way", buf);
        if (!(*p = saved) || !p[1]) break;
    }
    return 0;
}
