-- :FishSay {text} and :FishSayStop (the work is in lua/fish_say/init.lua).
if vim.g.loaded_fish_say then return end
vim.g.loaded_fish_say = true

vim.api.nvim_create_user_command("FishSay", function(cmd)
  require("fish_say").command(cmd)
end, { nargs = "*", range = true, desc = "Speak text (or the selected lines) with Fish Audio" })

vim.api.nvim_create_user_command("FishSayStop", function()
  require("fish_say").cancel_all()
end, { nargs = 0, desc = "Cancel running Fish Audio conversions" })

-- Leaving the editor cancels what is still running, so no partial file stays.
vim.api.nvim_create_autocmd("VimLeavePre", {
  group = vim.api.nvim_create_augroup("fish_say", { clear = true }),
  callback = function()
    if package.loaded.fish_say then package.loaded.fish_say.cancel_all() end
  end,
})
