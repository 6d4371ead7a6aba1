-- The development rock, built from the work tree:
--   luarocks make --lua-version=5.4 --tree=<dir> rockspec/fish-audio-scm-1.rockspec
-- rockspec/fish-audio-<version>-1.rockspec is the same rock at a release tag;
-- keep everything but `version` and `source` identical (spec/rock_spec.lua checks).
rockspec_format = "3.0"
package = "fish-audio"
version = "scm-1"
source = {
  url = "git+https://github.com/fish-lua/fish.git",
}
description = {
  summary = "Fish Audio text-to-speech and voice cloning for Lua",
  detailed = [[
    fish gives Lua programs the Fish Audio API: one-shot voice cloning with
    inline reference audio, persistent voices, ASR and account calls. A small
    C core drives libcurl without blocking; calls work from plain scripts,
    fish tasks, game frame loops and host event loops (Neovim, OpenResty).
    Runs on Lua 5.1 to 5.4 and LuaJIT.
  ]],
  homepage = "https://github.com/fish-lua/fish",
  license = "MIT",
}
dependencies = {
  "lua >= 5.1",
  "lua-cjson >= 2.1.0",
}
external_dependencies = {
  -- By library, not header: Debian keeps curl.h under a multiarch path
  -- that a header check does not search.
  CURL = { library = "curl" },
}
build = {
  type = "builtin",
  modules = {
    ["fish"] = "src/fish/init.lua",
    ["fish.account"] = "src/fish/account.lua",
    ["fish.asr"] = "src/fish/asr.lua",
    ["fish.client"] = "src/fish/client.lua",
    ["fish.deadlines"] = "src/fish/deadlines.lua",
    ["fish.errors"] = "src/fish/errors.lua",
    ["fish.file"] = "src/fish/file.lua",
    ["fish.heap"] = "src/fish/heap.lua",
    ["fish.http"] = "src/fish/http.lua",
    ["fish.json"] = "src/fish/json.lua",
    ["fish.live"] = "src/fish/live.lua",
    ["fish.live_audio"] = "src/fish/live_audio.lua",
    ["fish.live_out"] = "src/fish/live_out.lua",
    ["fish.live_protocol"] = "src/fish/live_protocol.lua",
    ["fish.live_text"] = "src/fish/live_text.lua",
    ["fish.loop"] = "src/fish/loop.lua",
    ["fish.nvim"] = "src/fish/nvim.lua",
    ["fish.openresty"] = "src/fish/openresty.lua",
    ["fish.tasks"] = "src/fish/tasks.lua",
    ["fish.tokens"] = "src/fish/tokens.lua",
    ["fish.tts"] = "src/fish/tts.lua",
    ["fish.util"] = "src/fish/util.lua",
    ["fish.voices"] = "src/fish/voices.lua",
    ["fish.cli.args"] = "src/fish/cli/args.lua",
    ["fish.cli.batch"] = "src/fish/cli/batch.lua",
    ["fish.cli.credits"] = "src/fish/cli/credits.lua",
    ["fish.cli.csv"] = "src/fish/cli/csv.lua",
    ["fish.cli.failure"] = "src/fish/cli/failure.lua",
    ["fish.cli.fs"] = "src/fish/cli/fs.lua",
    ["fish.cli.hash"] = "src/fish/cli/hash.lua",
    ["fish.cli.live"] = "src/fish/cli/live.lua",
    ["fish.cli.main"] = "src/fish/cli/main.lua",
    ["fish.cli.manifest"] = "src/fish/cli/manifest.lua",
    ["fish.cli.outdir"] = "src/fish/cli/outdir.lua",
    ["fish.cli.progress"] = "src/fish/cli/progress.lua",
    ["fish.cli.report"] = "src/fish/cli/report.lua",
    ["fish.cli.runner"] = "src/fish/cli/runner.lua",
    ["fish.cli.say"] = "src/fish/cli/say.lua",
    ["fish.cli.session"] = "src/fish/cli/session.lua",
    ["fish.cli.speech"] = "src/fish/cli/speech.lua",
    ["fish.cli.transcribe"] = "src/fish/cli/transcribe.lua",
    ["fish.cli.voices"] = "src/fish/cli/voices.lua",
    ["fish.core"] = {
      sources = {
        "src/buffer.c", "src/class.c", "src/compat.c", "src/core.c", "src/engine.c", "src/live.c",
        "src/lmsgpack.c", "src/msgpack_read.c", "src/msgpack_write.c", "src/options.c", "src/platform.c",
        "src/request.c", "src/transport.c", "src/utf8.c", "src/watch.c", "src/ws.c", "src/ws_test.c",
      },
      incdirs = { "$(CURL_INCDIR)" },
      libraries = { "curl" },
      libdirs = { "$(CURL_LIBDIR)" },
    },
  },
  -- The fish-audio command (src/bin/fish-audio); LuaRocks puts a wrapper
  -- that sets the rock tree's paths in the tree's bin/.
  install = {
    bin = { ["fish-audio"] = "src/bin/fish-audio" },
  },
}
