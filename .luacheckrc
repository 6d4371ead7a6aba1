-- luacheck (Debian lua-check) for `make lint`, which runs
--   luacheck src spec examples
max_line_length = 120
-- LuaJIT's table: `type(jit) == "table"` tells the ABI at run time.
read_globals = { "jit" }

-- The library runs on Lua 5.1, 5.2, 5.3, 5.4 and LuaJIT alike, so it may
-- only use what all of them have ("min"). A feature test such as
-- `table.unpack or unpack` says so on its line: `-- luacheck: ignore 113 143`.
files["src"] = { std = "min" }
-- fish.json falls back to Neovim's built-in vim.json.
files["src/fish/json.lua"] = { read_globals = { "vim" } }

-- Specs and examples pick by ABI where they must and run on every ABI in
-- `make test`, which is the real check: any Lua's globals ("max"), plus
-- busted's in the specs.
-- Specs hold long literal messages and fault descriptions: a wider line.
files["spec"] = { std = "max+busted", max_line_length = 140 }
files["examples"] = { std = "max" }
-- Golden msgpack bytes as hex, one vector a line, compared at a glance.
files["spec/convert_spec.lua"] = { max_line_length = false }
files["spec/msgpack_spec.lua"] = { max_line_length = false }

-- Host programs: each host's own global.
files["examples/nvim"] = { globals = { "vim" } }
files["spec/support/hosts/nvim_say.lua"] = { globals = { "vim" } }
files["spec/support/hosts/nvim_live.lua"] = { globals = { "vim" } }
files["examples/openresty"] = { globals = { "ngx" } }
files["examples/game_loop.lua"] = { globals = { "love" } }
files["examples/love"] = { globals = { "love" } }
files["spec/support/love"] = { globals = { "love" } }
-- Run by spec/support/oom_host.c, which defines it.
files["spec/support/oom_case.lua"] = { read_globals = { "fail_allocation" } }
