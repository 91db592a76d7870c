/* SPDX-License-Identifier: Apache-2.0
 * replay: feed every file of the given corpus directories (or files) to
 * LLVMFuzzerTestOneInput once. Lets `make check` run the fuzz targets' seeds
 * and past crashers with gcc and the sanitizers, without libFuzzer.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf;
    long n;

    if (f == NULL) {
        fprintf(stderr, "replay: cannot open '%s'\n", path);
        return -1;
    }
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf == NULL || (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n)) {
        fprintf(stderr, "replay: cannot read '%s'\n", path);
        fclose(f);
        free(buf);
        return -1;
    }
    fclose(f);
    LLVMFuzzerTestOneInput(buf, (size_t)n);
    free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    int files = 0, errors = 0;

    for (int i = 1; i < argc; i++) {
        struct stat sb;
        if (stat(argv[i], &sb) != 0) {
            fprintf(stderr, "replay: '%s' does not exist\n", argv[i]);
            errors++;
            continue;
        }
        if (S_ISDIR(sb.st_mode)) {
            DIR *d = opendir(argv[i]);
            struct dirent *e;
            while (d != NULL && (e = readdir(d)) != NULL) {
                char path[4096];
                if (e->d_name[0] == '.') {
                    continue;
                }
                snprintf(path, sizeof(path), "%s/%s", argv[i], e->d_name);
                errors += run_file(path) != 0;
                files++;
            }
            if (d != NULL) {
                closedir(d);
            }
        } else {
            errors += run_file(argv[i]) != 0;
            files++;
        }
    }
    /* reaching here means no input crashed or tripped a sanitizer */
    printf("%s: %d inputs replayed\n", argv[0], files);
    printf("%d passed, %d failed\n", files - errors, errors);
    return errors != 0 || files == 0;
}
