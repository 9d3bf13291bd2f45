-- How users install chronicle: `luarocks make rockspec/chronicle-scm-1.rockspec` from a checkout.
-- The source and module lists are kept in step with the tree by `make rockspec`;
-- spec/rockspec_spec.lua fails when a csrc/**/*.c or lua/chronicle/**/*.lua file is missing here.
rockspec_format = "3.0"
package = "chronicle"
version = "scm-1"

source = {
  url = "git+file://.",
  branch = "main",
}

description = {
  summary = "An embedded event store for Lua 5.4 on LMDB",
  detailed = [[
chronicle keeps a durable, append-only event log in LMDB with a C core, and defines
aggregates, projections and event handlers in Lua.
]],
  license = "MIT",
  labels = { "event-sourcing", "lmdb", "database" },
}

dependencies = {
  "lua >= 5.4, < 5.5",
  "lua-cjson",      -- the chronicle command's JSON Lines
  "argparse",       -- the chronicle command's arguments
  -- optional: luafilesystem (script folders; `ls` otherwise), readline (REPL), lua-term (colours)
}

external_dependencies = {
  LMDB = { header = "lmdb.h", library = "lmdb" },
  MSGPACK = { header = "msgpack.h" },   -- headers only: csrc/common/codec.c instantiates its packer template
  XXHASH = { header = "xxhash.h", library = "xxhash" },
  PQ = { header = "postgresql/libpq-fe.h", library = "pq" },   -- chronicle.postgres (Debian: libpq-dev)
  SODIUM = { header = "sodium.h", library = "sodium" },   -- chronicle.crypto: personal data (Debian: libsodium-dev)
}

build = {
  type = "builtin",
  modules = {
    ["chronicle.core"] = {
      sources = {
        -- begin: make rockspec sources
        "csrc/common/append_input.c",
        "csrc/common/buf.c",
        "csrc/common/cerror.c",
        "csrc/common/codec.c",
        "csrc/common/event_batch.c",
        "csrc/common/event_table.c",
        "csrc/common/lib.c",
        "csrc/common/options.c",
        "csrc/common/record.c",
        "csrc/common/refusal.c",
        "csrc/common/retention.c",
        "csrc/common/uuid.c",
        "csrc/lmdb/append.c",
        "csrc/lmdb/backup.c",
        "csrc/lmdb/core.c",
        "csrc/lmdb/envreg.c",
        "csrc/lmdb/kv.c",
        "csrc/lmdb/scan.c",
        "csrc/lmdb/scavenge.c",
        "csrc/lmdb/store.c",
        "csrc/lmdb/verify.c",
        "csrc/lmdb/watch.c",
        "csrc/lmdb/write.c",
        -- end: make rockspec sources
      },
      defines = { "_GNU_SOURCE" },
      libraries = { "lmdb", "xxhash", "pthread" },
      incdirs = { "csrc", "$(LMDB_INCDIR)", "$(MSGPACK_INCDIR)", "$(XXHASH_INCDIR)" },
      libdirs = { "$(LMDB_LIBDIR)", "$(XXHASH_LIBDIR)" },
    },
    ["chronicle.postgres"] = {
      sources = {
        -- begin: make rockspec pgsources
        "csrc/postgres/pg_admin.c",
        "csrc/postgres/pg_append.c",
        "csrc/postgres/pg_scan.c",
        "csrc/postgres/pg_scavenge.c",
        "csrc/postgres/pg_store.c",
        "csrc/common/append_input.c",
        "csrc/common/buf.c",
        "csrc/common/cerror.c",
        "csrc/common/codec.c",
        "csrc/common/event_batch.c",
        "csrc/common/event_table.c",
        "csrc/common/lib.c",
        "csrc/common/options.c",
        "csrc/common/record.c",
        "csrc/common/refusal.c",
        "csrc/common/retention.c",
        "csrc/common/uuid.c",
        -- end: make rockspec pgsources
      },
      defines = { "_GNU_SOURCE", "CERR_NO_LMDB" },
      libraries = { "pq", "xxhash", "pthread" },
      incdirs = { "csrc", "$(PQ_INCDIR)/postgresql", "$(MSGPACK_INCDIR)", "$(XXHASH_INCDIR)" },
      libdirs = { "$(PQ_LIBDIR)", "$(XXHASH_LIBDIR)" },
    },
    ["chronicle.common"] = {
      sources = {
        -- begin: make rockspec commonsources
        "csrc/common/append_input.c",
        "csrc/common/buf.c",
        "csrc/common/cerror.c",
        "csrc/common/codec.c",
        "csrc/common/event_batch.c",
        "csrc/common/event_table.c",
        "csrc/common/lib.c",
        "csrc/common/options.c",
        "csrc/common/record.c",
        "csrc/common/refusal.c",
        "csrc/common/retention.c",
        "csrc/common/uuid.c",
        -- end: make rockspec commonsources
      },
      defines = { "_GNU_SOURCE", "CERR_NO_LMDB", "CHRONICLE_COMMON_MODULE" },
      libraries = { "xxhash" },
      incdirs = { "csrc", "$(MSGPACK_INCDIR)", "$(XXHASH_INCDIR)" },
      libdirs = { "$(XXHASH_LIBDIR)" },
    },
    ["chronicle.crypto"] = {
      sources = {
        -- begin: make rockspec cryptosources
        "csrc/crypto/batch.c",
        "csrc/crypto/crypto.c",
        "csrc/crypto/reveal.c",
        "csrc/common/append_input.c",
        "csrc/common/buf.c",
        "csrc/common/cerror.c",
        "csrc/common/codec.c",
        "csrc/common/event_batch.c",
        "csrc/common/event_table.c",
        "csrc/common/lib.c",
        "csrc/common/options.c",
        "csrc/common/record.c",
        "csrc/common/refusal.c",
        "csrc/common/retention.c",
        "csrc/common/uuid.c",
        -- end: make rockspec cryptosources
      },
      defines = { "_GNU_SOURCE", "CERR_NO_LMDB" },
      libraries = { "sodium", "xxhash" },
      incdirs = { "csrc", "$(SODIUM_INCDIR)", "$(MSGPACK_INCDIR)", "$(XXHASH_INCDIR)" },
      libdirs = { "$(SODIUM_LIBDIR)", "$(XXHASH_LIBDIR)" },
    },
    ["chronicle.sandbox"] = {   -- untrusted scripts in their own Lua states: no LMDB, no libpq
      sources = {
        -- begin: make rockspec sandboxsources
        "csrc/sandbox/sandbox.c",
        "csrc/sandbox/sandbox_budget.c",
        "csrc/sandbox/sandbox_lib.c",
        "csrc/sandbox/sandbox_pattern.c",
        "csrc/sandbox/sandbox_view.c",
        "csrc/common/append_input.c",
        "csrc/common/buf.c",
        "csrc/common/cerror.c",
        "csrc/common/codec.c",
        "csrc/common/event_batch.c",
        "csrc/common/event_table.c",
        "csrc/common/lib.c",
        "csrc/common/options.c",
        "csrc/common/record.c",
        "csrc/common/refusal.c",
        "csrc/common/retention.c",
        "csrc/common/uuid.c",
        -- end: make rockspec sandboxsources
      },
      defines = { "_GNU_SOURCE", "CERR_NO_LMDB" },
      libraries = { "xxhash" },
      incdirs = { "csrc", "$(MSGPACK_INCDIR)", "$(XXHASH_INCDIR)" },
      libdirs = { "$(XXHASH_LIBDIR)" },
    },
    -- begin: make rockspec modules
    ["chronicle"] = "lua/chronicle/init.lua",
    ["chronicle.backends"] = "lua/chronicle/backends.lua",
    ["chronicle.cli.arguments"] = "lua/chronicle/cli/arguments.lua",
    ["chronicle.cli.browse"] = "lua/chronicle/cli/browse.lua",
    ["chronicle.cli.context"] = "lua/chronicle/cli/context.lua",
    ["chronicle.cli.copy"] = "lua/chronicle/cli/copy.lua",
    ["chronicle.cli.deadletters"] = "lua/chronicle/cli/deadletters.lua",
    ["chronicle.cli.forget"] = "lua/chronicle/cli/forget.lua",
    ["chronicle.cli.integrity"] = "lua/chronicle/cli/integrity.lua",
    ["chronicle.cli.json"] = "lua/chronicle/cli/json.lua",
    ["chronicle.cli.lifecycle"] = "lua/chronicle/cli/lifecycle.lua",
    ["chronicle.cli.main"] = "lua/chronicle/cli/main.lua",
    ["chronicle.cli.output"] = "lua/chronicle/cli/output.lua",
    ["chronicle.cli.progress"] = "lua/chronicle/cli/progress.lua",
    ["chronicle.cli.projections"] = "lua/chronicle/cli/projections.lua",
    ["chronicle.cli.repl"] = "lua/chronicle/cli/repl.lua",
    ["chronicle.cli.serve"] = "lua/chronicle/cli/serve.lua",
    ["chronicle.cli.terminal"] = "lua/chronicle/cli/terminal.lua",
    ["chronicle.cli.time"] = "lua/chronicle/cli/time.lua",
    ["chronicle.cli.transfer"] = "lua/chronicle/cli/transfer.lua",
    ["chronicle.fault"] = "lua/chronicle/fault.lua",
    ["chronicle.lifecycle"] = "lua/chronicle/lifecycle.lua",
    ["chronicle.names"] = "lua/chronicle/names.lua",
    ["chronicle.options"] = "lua/chronicle/options.lua",
    ["chronicle.personal"] = "lua/chronicle/personal.lua",
    ["chronicle.read.group"] = "lua/chronicle/read/group.lua",
    ["chronicle.read.handler"] = "lua/chronicle/read/handler.lua",
    ["chronicle.read.projection"] = "lua/chronicle/read/projection.lua",
    ["chronicle.read.reactor"] = "lua/chronicle/read/reactor.lua",
    ["chronicle.read.runner"] = "lua/chronicle/read/runner.lua",
    ["chronicle.read.subscription"] = "lua/chronicle/read/subscription.lua",
    ["chronicle.read.view"] = "lua/chronicle/read/view.lua",
    ["chronicle.scripts"] = "lua/chronicle/scripts/init.lua",
    ["chronicle.scripts.sandbox"] = "lua/chronicle/scripts/sandbox.lua",
    ["chronicle.server"] = "lua/chronicle/server/init.lua",
    ["chronicle.server.api"] = "lua/chronicle/server/api.lua",
    ["chronicle.server.group_commit"] = "lua/chronicle/server/group_commit.lua",
    ["chronicle.server.http"] = "lua/chronicle/server/http.lua",
    ["chronicle.server.metrics"] = "lua/chronicle/server/metrics.lua",
    ["chronicle.server.static"] = "lua/chronicle/server/static.lua",
    ["chronicle.server.subscribe"] = "lua/chronicle/server/subscribe.lua",
    ["chronicle.spaces"] = "lua/chronicle/spaces.lua",
    ["chronicle.store"] = "lua/chronicle/store.lua",
    ["chronicle.write.aggregate"] = "lua/chronicle/write/aggregate.lua",
    ["chronicle.write.repository"] = "lua/chronicle/write/repository.lua",
    ["chronicle.write.unit_of_work"] = "lua/chronicle/write/unit_of_work.lua",
    ["chronicle.write.upcast"] = "lua/chronicle/write/upcast.lua",
    -- end: make rockspec modules
  },
  install = {
    bin = { chronicle = "bin/chronicle" },
    lua = {
      -- begin: make rockspec web
      ["chronicle.server.web.app_js"] = "lua/chronicle/server/web/app.js",
      ["chronicle.server.web.index_html"] = "lua/chronicle/server/web/index.html",
      ["chronicle.server.web.style_css"] = "lua/chronicle/server/web/style.css",
      -- end: make rockspec web
    },
  },
}
