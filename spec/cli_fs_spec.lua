-- fish-audio's file writes (fish.cli.fs) on their own: the whole-file
-- writes of --timestamps and batch's state file go through a temporary
-- name that is never a user's file and never outlives a failure.
local fs = require("fish.cli.fs")
local files = require("support.files")

describe("fish-audio's atomic file writes", function()
  local dir

  before_each(function() dir = files.tmpdir() end)
  after_each(function() files.remove_tree(dir) end)

  it("writes the whole file and leaves nothing else behind", function()
    local path = dir .. "/timings.txt"
    assert.is_true(fs.write_atomic(path, "0.000\t0.170\thi\n"))
    assert.equals("0.000\t0.170\thi\n", files.read(path))
    assert.same({ "timings.txt" }, files.entries(dir))
  end)

  it("leaves a user's FILE.tmp alone", function()
    local path = dir .. "/out.txt"
    files.write(path .. ".tmp", "the user's own file")
    assert.is_true(fs.write_atomic(path, "new"))
    assert.equals("the user's own file", files.read(path .. ".tmp"))
    assert.equals("new", files.read(path))
  end)

  it("removes its temporary file when the rename fails (the target is a directory)", function()
    local target = dir .. "/taken"
    assert.is_true(fs.mkdir_p(target .. "/inside"))
    local ok, why = fs.write_atomic(target, "data")
    assert.is_nil(ok)
    assert.is_string(why)
    assert.same({ "taken" }, files.entries(dir))
  end)

  it("says why a path cannot be written, before anything is sent", function()
    assert.is_nil(fs.unwritable(dir .. "/new.mp3"))
    assert.equals("is a directory", fs.unwritable(dir))
    assert.equals("no such directory: " .. dir .. "/missing", fs.unwritable(dir .. "/missing/x.mp3"))
  end)
end)
