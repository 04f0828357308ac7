/* deploy_file.h - reads a deploy file (YAML) into a deployment.
 *
 *   backends:
 *     - name: counter1
 *       plugin: counter          # bare name, or a path relative to the file
 *       max_batch_size: 8        # any backend option, '_' for '-'
 *       config: {start: "100"}
 *   endpoints:
 *     - name: counter1
 *       route: /increment
 *       methods: [GET, POST]
 *       backend: counter1        # or traffic: {counter1: 0.9, other: 0.1}
 *       shadow: {other: 0.1}
 *
 * Every error names the file and line: "deploy.yaml:12: ...". The whole
 * file is checked before anything is applied. */
#ifndef SERVE_RUNTIME_DEPLOY_FILE_H
#define SERVE_RUNTIME_DEPLOY_FILE_H

#include <stdbool.h>
#include <stddef.h>

#include "deployment.h"

bool deploy_file_load(const char *path, struct deployment *out, char *err, size_t errlen);

#endif
